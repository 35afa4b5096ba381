//! The verbs on objects: get, list, create, update, patch, delete,
//! deletecollection, and the scale and binding subresources. Watch lives in
//! `watch.rs`.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::fields::{self, FieldValidation};
use super::objects::{self, name_of};
use super::openapi;
use super::patch::{self, PatchType};
use super::resources::{Resource, RESOURCES};
use super::selector::{FieldSelector, LabelSelector};
use super::services;
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::registry::{Claims, RegistryError, Stored};

pub type Query = HashMap<String, String>;

pub fn key(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    match (r.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/{ns}/{name}", r.storage_group(), r.plural),
        _ => format!("/registry/{}/{}/{name}", r.storage_group(), r.plural),
    }
}

/// Every object of `r` (in `namespace`, if given), as a key prefix.
pub fn prefix(r: &Resource, namespace: Option<&str>) -> String {
    match (r.namespaced, namespace) {
        (true, Some(ns)) => format!("/registry/{}/{}/{ns}/", r.storage_group(), r.plural),
        _ => format!("/registry/{}/{}/", r.storage_group(), r.plural),
    }
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// The selectors of a list, watch or deletecollection.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_query(q: &Query) -> ApiResult<Filter> {
        Ok(Filter {
            labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
                .map_err(ApiError::bad_request)?,
        })
    }

    /// No selectors: every object.
    pub fn everything() -> Filter {
        Filter::from_query(&Query::new()).expect("empty selectors parse")
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

fn parse_rv(s: Option<&String>) -> ApiResult<i64> {
    match s.map(String::as_str) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}"))),
    }
}

/// A continue token: the revision the list is read at and the next key.
fn encode_continue(revision: i64, next: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": revision, "start": next}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    use base64::Engine;
    let bad = || ApiError::bad_request("invalid continue token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

impl Api {
    pub async fn get(&self, r: &Resource, ns: Option<&str>, name: &str) -> ApiResult<Stored> {
        self.registry
            .get(&key(r, ns, name))
            .await
            .map_err(|e| ApiError::from_registry(e, r, name))
    }

    pub async fn list(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        q: &Query,
    ) -> ApiResult<Value> {
        let filter = Filter::from_query(q)?;
        let limit: i64 = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let (revision, start) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, start) = decode_continue(token)?;
                (rv, Some(start))
            }
            None => (0, None),
        };
        let page = self
            .registry
            .list(&prefix(r, ns), start.as_deref(), revision, limit.max(0))
            .await
            .map_err(|e| match e {
                RegistryError::Gone(_) => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                other => ApiError::from_registry(other, r, ""),
            })?;
        let items: Vec<Value> = page
            .items
            .into_iter()
            .map(|s| s.object)
            .filter(|o| filter.matches(o))
            .collect();
        let mut metadata = json!({"resourceVersion": page.revision.to_string()});
        if let Some(next) = &page.next {
            metadata["continue"] = json!(encode_continue(page.revision, next));
        }
        Ok(json!({
            "apiVersion": r.api_version(),
            "kind": format!("{}List", r.kind),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Refuse new objects in a namespace that does not exist or is going away.
    async fn check_namespace(&self, ns: &str) -> ApiResult<()> {
        let nsr = namespaces();
        match self.registry.get(&key(nsr, None, ns)).await {
            Ok(s)
                if s.object.pointer("/status/phase").and_then(Value::as_str)
                    == Some("Terminating") =>
            {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::from_registry(e, nsr, ns)),
        }
    }

    pub async fn create(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        body: Value,
        q: &Query,
    ) -> ApiResult<Value> {
        let mut body = body;
        fields::check(openapi::documents(), r, &mut body, field_validation(q)?)?;
        let mut object = objects::for_create(r, ns, body)?;
        if r.group.is_empty() && r.plural == "pods" {
            self.admit_pod_service_account(ns.unwrap_or("default"), &mut object)
                .await?;
        }
        super::admission::admit(self, r, ns, None, &object).await?;
        if r.namespaced {
            self.check_namespace(ns.unwrap_or("default")).await?;
        }
        let name = name_of(&object).to_string();
        let unassigned = object.clone();
        // Another write may claim the same free address first: pick again.
        for _ in 0..5 {
            let claims = self.service_claims(r, None, &mut object).await?;
            if dry_run(q) {
                return Ok(object);
            }
            match self
                .registry
                .create(&key(r, ns, &name), &object, &claims)
                .await
            {
                Ok(rev) => {
                    crate::registry::set_resource_version(&mut object, rev);
                    return Ok(object);
                }
                Err(RegistryError::Claimed(_)) => object = unassigned.clone(),
                Err(e) => return Err(ApiError::from_registry(e, r, &name)),
            }
        }
        Err(ApiError::conflict(r, &name))
    }

    /// For a Service: carry over what it holds, assign what it asks the
    /// server for, and say which claims the write takes and gives back.
    async fn service_claims(
        &self,
        r: &Resource,
        old: Option<&Value>,
        new: &mut Value,
    ) -> ApiResult<Claims> {
        if r.plural != "services" {
            return Ok(Claims::default());
        }
        let name = name_of(new).to_string();
        let invalid = |causes: Vec<(String, String)>| ApiError::invalid(r, &name, &causes);
        if let Some(old) = old {
            services::carry_over(old, new).map_err(invalid)?;
        }
        let mut taken = BTreeSet::new();
        // Most updates claim nothing new: no need to read every claim.
        let prefixes = if services::needs_taken(old, new) {
            &services::claim_prefixes()[..]
        } else {
            &[]
        };
        for prefix in prefixes {
            taken.extend(
                self.registry
                    .keys(prefix)
                    .await
                    .map_err(|e| ApiError::from_registry(e, r, &name))?,
            );
        }
        let taken = match old {
            Some(o) => services::held_elsewhere(o, taken),
            None => taken,
        };
        services::assign(&self.ranges, new, &taken).map_err(invalid)?;
        Ok(services::diff(old, Some(new)))
    }

    /// Replace an object (or its status), checking `metadata.resourceVersion`
    /// when the body carries one.
    pub async fn update(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        body: Value,
        q: &Query,
    ) -> ApiResult<Value> {
        let current = self.get(r, ns, name).await?;
        let expected =
            match body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
            {
                Some(rv) if !rv.is_empty() => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
                _ => None,
            };
        if expected.is_some_and(|e| e != current.revision) {
            return Err(ApiError::conflict(r, name));
        }
        let mut body = body;
        fields::check(openapi::documents(), r, &mut body, field_validation(q)?)?;
        let next = objects::for_update(r, ns, &current.object, body, sub)?;
        self.store_update(r, ns, name, &current, next, q).await
    }

    /// Write `next` over the object last seen at `revision`. An object whose
    /// deletion waited only on finalizers goes away instead, once the
    /// last of them is removed.
    async fn store_update(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        current: &Stored,
        mut next: Value,
        q: &Query,
    ) -> ApiResult<Value> {
        super::admission::admit(self, r, ns, Some(&current.object), &next).await?;
        let claims = self
            .service_claims(r, Some(&current.object), &mut next)
            .await?;
        if dry_run(q) {
            return Ok(next);
        }
        let k = key(r, ns, name);
        if r.plural != "namespaces" && finishes_deletion(&current.object, &next) {
            let (_, rev) = self
                .registry
                .delete(&k, Some(current.revision), &release_all(r, &current.object))
                .await
                .map_err(|e| ApiError::from_registry(e, r, name))?;
            crate::registry::set_resource_version(&mut next, rev);
            return Ok(next);
        }
        let rev = self
            .registry
            .update(&k, &next, Some(current.revision), &claims)
            .await
            .map_err(|e| match e {
                // Retried by patch; a replace sees 409 and may try again.
                RegistryError::Claimed(_) => ApiError::conflict(r, name),
                e => ApiError::from_registry(e, r, name),
            })?;
        crate::registry::set_resource_version(&mut next, rev);
        Ok(next)
    }

    // The object's coordinates, the subresource, the patch and the query:
    // each is needed, and a struct for them would only be unpacked here.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        sub: Option<&str>,
        kind: PatchType,
        body: &[u8],
        q: &Query,
    ) -> ApiResult<Value> {
        // A patch applies to whatever is there: retried on a concurrent change.
        until_no_conflict(|| async move {
            let current = self.get(r, ns, name).await?;
            let mut patched = current.object.clone();
            patch::apply(kind, &mut patched, body)?;
            fields::check(openapi::documents(), r, &mut patched, field_validation(q)?)?;
            let next = objects::for_update(r, ns, &current.object, patched, sub)?;
            self.store_update(r, ns, name, &current, next, q).await
        })
        .await
    }

    /// `deployments/<name>/scale` and friends, as an autoscaling/v1 Scale.
    pub fn scale_of(&self, object: &Value) -> Value {
        let selector = object
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let meta = objects::meta(object).cloned().unwrap_or_default();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
                "creationTimestamp": meta.get("creationTimestamp"),
            },
            "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
            "status": {
                "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                "selector": selector,
            },
        })
    }

    /// Update or patch a Scale: only `spec.replicas` reaches the object.
    pub async fn write_scale(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        patch_kind: Option<PatchType>,
        body: &[u8],
        q: &Query,
    ) -> ApiResult<Value> {
        // A replaced Scale is parsed once; its resourceVersion, if any, is a
        // precondition. Without one, the write applies to whatever is there
        // and is retried on a concurrent change, as a patch is.
        let replacement: Option<Value> = match patch_kind {
            Some(_) => None,
            None => Some(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid Scale: {e}")))?,
            ),
        };
        let precondition = replacement
            .as_ref()
            .and_then(|s| s.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .filter(|rv| !rv.is_empty())
            .map(str::to_string);
        let attempt = || async {
            let current = self.get(r, ns, name).await?;
            let scale = match patch_kind {
                Some(kind) => {
                    let mut scale = self.scale_of(&current.object);
                    patch::apply(kind, &mut scale, body)?;
                    scale
                }
                None => replacement.clone().unwrap_or_default(),
            };
            if precondition
                .as_deref()
                .is_some_and(|rv| rv != current.revision.to_string())
            {
                return Err(ApiError::conflict(r, name));
            }
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        r,
                        name,
                        &[(
                            "spec.replicas".into(),
                            "must be a non-negative integer".into(),
                        )],
                    )
                })?;
            let mut next = current.object.clone();
            next["spec"]["replicas"] = json!(replicas);
            let next = objects::for_update(r, ns, &current.object, next, None)?;
            let updated = self.store_update(r, ns, name, &current, next, q).await?;
            Ok(self.scale_of(&updated))
        };
        if precondition.is_some() {
            attempt().await
        } else {
            until_no_conflict(attempt).await
        }
    }

    /// `pods/<name>/binding`: put the pod on a node.
    pub async fn bind(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
    ) -> ApiResult<Value> {
        let node = body
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(r, name, &[("target.name".into(), "Required value".into())])
            })?
            .to_string();
        let current = self.get(r, ns, name).await?;
        if current
            .object
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(r, name));
        }
        let mut next = current.object.clone();
        next["spec"]["nodeName"] = json!(node);
        self.registry
            .update(
                &key(r, ns, name),
                &next,
                Some(current.revision),
                &Claims::default(),
            )
            .await
            .map_err(|e| ApiError::from_registry(e, r, name))?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// Delete one object with `opts`, a DeleteOptions as decoded from the
    /// request's body (`{}` when it had none).
    pub async fn delete(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        q: &Query,
    ) -> ApiResult<Value> {
        // The deprecated orphanDependents says what a policy would.
        let orphan = match opts["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan"),
            Some(false) => Some("Background"),
            None => None,
        };
        let policy = q
            .get("propagationPolicy")
            .map(String::as_str)
            .or_else(|| opts["propagationPolicy"].as_str())
            .or(orphan)
            .unwrap_or("Background")
            .to_string();
        if !matches!(policy.as_str(), "Background" | "Foreground" | "Orphan") {
            return Err(ApiError::bad_request(format!(
                "unknown propagationPolicy {policy:?}"
            )));
        }
        // A dry run asked for in the body counts as one asked for in the
        // query (a protobuf DeleteOptions can only say it there).
        let mut dry = None;
        if opts["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"))
            && !dry_run(q)
        {
            let mut with = q.clone();
            with.insert("dryRun".into(), "All".into());
            dry = Some(with);
        }
        let q = dry.as_ref().unwrap_or(q);
        // Without preconditions a delete is not optimistic: when the object
        // changes under it (a controller writing its status), read it again
        // and retry, as the Kubernetes API server does.
        let policy = policy.as_str();
        if opts.get("preconditions").is_none_or(Value::is_null) {
            until_no_conflict(|| self.delete_once(r, ns, name, opts, policy, q)).await
        } else {
            self.delete_once(r, ns, name, opts, policy, q).await
        }
    }

    async fn delete_once(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        name: &str,
        opts: &Value,
        policy: &str,
        q: &Query,
    ) -> ApiResult<Value> {
        let current = self.get(r, ns, name).await?;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
            let stored = current
                .object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            if stored != uid {
                return Err(ApiError::uid_precondition(r, name, uid, stored));
            }
        }
        if let Some(rv) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if rv != current.revision.to_string() {
                return Err(ApiError::conflict(r, name));
            }
        }
        if dry_run(q) {
            return Ok(current.object);
        }
        if r.plural == "namespaces" {
            return self.terminate_namespace(name, current).await;
        }
        if r.plural == "pods" {
            if let Some(grace) = pod_grace_period(&current.object, opts, q)? {
                return self.mark_pod_deleted(ns, name, current, grace).await;
            }
        }
        let mut finalizers: Vec<Value> = current
            .object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Foreground and Orphan leave the object in place, marked, for the
        // garbage collector (on the Raft leader) to finish: it deletes the
        // dependents first, or releases them, then drops the finalizer.
        let gc_finalizer = match policy {
            "Foreground" => Some("foregroundDeletion"),
            "Orphan" => Some("orphan"),
            _ => None,
        };
        if let Some(f) = gc_finalizer {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        }
        if !finalizers.is_empty() {
            // Finalizers hold the object until their owners remove them.
            let mut next = current.object.clone();
            next["metadata"]["finalizers"] = json!(finalizers);
            if next.pointer("/metadata/deletionTimestamp").is_none() {
                next["metadata"]["deletionTimestamp"] = json!(objects::now());
            }
            if r.plural == "pods" {
                // Its node is done with it (or it never ran): only the
                // finalizers hold it now.
                next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            return self.store_update(r, ns, name, &current, next, q).await;
        }
        // Background: the object goes now, its dependents after it (the
        // garbage collector finds them owned by an object that is gone).
        let (mut gone, rev) = self
            .registry
            .delete(
                &key(r, ns, name),
                Some(current.revision),
                &release_all(r, &current.object),
            )
            .await
            .map_err(|e| ApiError::from_registry(e, r, name))?;
        crate::registry::set_resource_version(&mut gone.object, rev);
        Ok(gone.object)
    }

    /// Graceful deletion: the pod stays, marked with when its grace ends,
    /// until its node has stopped its containers and confirms
    /// ([`Api::finish_pod_deletion`]). A second delete may shorten the
    /// grace, never lengthen it.
    async fn mark_pod_deleted(
        &self,
        ns: Option<&str>,
        name: &str,
        current: Stored,
        grace: i64,
    ) -> ApiResult<Value> {
        let meta = &current.object["metadata"];
        let marked = meta["deletionTimestamp"].is_string();
        if marked
            && meta["deletionGracePeriodSeconds"]
                .as_i64()
                .is_some_and(|g| g <= grace)
        {
            return Ok(current.object);
        }
        let mut next = current.object.clone();
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        next["metadata"]["deletionTimestamp"] =
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        next["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let pods = pods();
        let rev = self
            .registry
            .update(
                &key(pods, ns, name),
                &next,
                Some(current.revision),
                &Claims::default(),
            )
            .await
            .map_err(|e| ApiError::from_registry(e, pods, name))?;
        crate::registry::set_resource_version(&mut next, rev);
        Ok(next)
    }

    /// A node's confirmation that a pod marked for deletion has no
    /// containers left: the pod goes now (if it is still the same pod).
    pub async fn finish_pod_deletion(&self, ns: &str, name: &str, uid: &str) -> ApiResult<()> {
        let opts = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
        match self
            .delete_once(pods(), Some(ns), name, &opts, "Background", &Query::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == StatusCode::NOT_FOUND => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Mark a namespace Terminating.
    async fn terminate_namespace(&self, name: &str, current: Stored) -> ApiResult<Value> {
        let nsr = namespaces();
        let mut next = current.object.clone();
        next["status"] = json!({"phase": "Terminating"});
        if next.pointer("/metadata/deletionTimestamp").is_none() {
            next["metadata"]["deletionTimestamp"] = json!(objects::now());
        }
        let rev = self
            .registry
            .update(
                &key(nsr, None, name),
                &next,
                Some(current.revision),
                &Claims::default(),
            )
            .await
            .map_err(|e| ApiError::from_registry(e, nsr, name))?;
        crate::registry::set_resource_version(&mut next, rev);
        // The namespace controller (on the Raft leader) empties it, then deletes it.
        Ok(next)
    }

    /// Delete everything in namespace `ns`, then `ns` itself (the
    /// namespace controller's work once `ns` is Terminating).
    pub async fn empty_namespace(&self, ns: &str) -> ApiResult<()> {
        let q = Query::new();
        for r in RESOURCES.iter().filter(|r| r.namespaced && r.is_stored()) {
            let list = self.list(r, Some(ns), &q).await?;
            for item in list["items"].as_array().into_iter().flatten() {
                let at = item
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|v| v.parse::<i64>().ok());
                let name = name_of(item);
                match self
                    .registry
                    .delete(&key(r, Some(ns), name), at, &release_all(r, item))
                    .await
                {
                    Ok(_) | Err(RegistryError::NotFound) => {}
                    Err(e) => return Err(ApiError::from_registry(e, r, name)),
                }
            }
        }
        let nsr = namespaces();
        match self
            .registry
            .delete(&key(nsr, None, ns), None, &Claims::default())
            .await
        {
            Ok(_) | Err(RegistryError::NotFound) => Ok(()),
            Err(e) => Err(ApiError::from_registry(e, nsr, ns)),
        }
    }

    /// Delete every object the query selects, each with `opts`.
    pub async fn delete_collection(
        &self,
        r: &'static Resource,
        ns: Option<&str>,
        q: &Query,
        opts: &Value,
    ) -> ApiResult<Value> {
        let list = self.list(r, ns, q).await?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
            match self.delete(r, item_ns, name_of(item), opts, q).await {
                Ok(o) => deleted.push(o),
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "apiVersion": r.api_version(),
            "kind": format!("{}List", r.kind),
            "metadata": {"resourceVersion": self.registry.store().revision().to_string()},
            "items": deleted,
        }))
    }

    /// Make sure `default` and `kube-system` exist (every master, at start).
    pub async fn ensure_namespaces(&self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let body = json!({"metadata": {"name": ns}});
            match self.create(namespaces(), None, body, &Query::new()).await {
                Ok(_) => tracing::info!(namespace = ns, "created"),
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => tracing::warn!(namespace = ns, "could not be created yet: {}", e.message),
            }
        }
    }

    /// Create the bootstrap ClusterRoles and ClusterRoleBindings that are
    /// missing (one an operator changed is left as it is); true once all
    /// exist.
    pub async fn ensure_rbac_defaults(&self) -> bool {
        use crate::auth::rbac::bootstrap;
        let roles = bootstrap::cluster_roles().into_iter().map(|r| {
            let name = r.metadata.name.clone().unwrap_or_default();
            ("ClusterRole", name, serde_json::to_value(r))
        });
        let bindings = bootstrap::cluster_role_bindings().into_iter().map(|b| {
            let name = b.metadata.name.clone().unwrap_or_default();
            ("ClusterRoleBinding", name, serde_json::to_value(b))
        });
        let mut done = true;
        for (kind, name, body) in roles.chain(bindings) {
            let Some(r) = super::find_kind(bootstrap::GROUP, "v1", kind) else {
                continue;
            };
            let Ok(mut body) = body else { continue };
            body["apiVersion"] = json!(r.api_version());
            body["kind"] = json!(kind);
            match self.create(r, None, body, &Query::new()).await {
                Ok(_) => tracing::debug!(kind, name, "bootstrap RBAC object created"),
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => {
                    tracing::debug!(kind, name, "could not be created yet: {}", e.message);
                    done = false;
                }
            }
        }
        done
    }
}

/// Run `attempt` again while it fails with Conflict (the object changed
/// between its read and its write), after a short random pause, for up to
/// 10 s: for writes that apply to whatever is there (a patch, a delete
/// without preconditions), as the Kubernetes API server retries them.
async fn until_no_conflict<T, F, Fut>(mut attempt: F) -> ApiResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pause_ms = 1u64;
    loop {
        match attempt().await {
            Err(e) if e.stale && std::time::Instant::now() < deadline => {
                let ms = rand::random::<u64>() % pause_ms + 1;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                pause_ms = (pause_ms * 2).min(50);
            }
            other => return other,
        }
    }
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Whether writing `next` over `current` completes its deletion: the
/// write removes the last finalizer of an object marked for deletion with
/// no grace left to wait out, as Kubernetes' ShouldDeleteDuringUpdate.
/// Any other write to an object being deleted is a write: above all a
/// pod's status while its node stops it (a pod in its grace period has no
/// finalizers, and deleting it then would let a replacement start while
/// its containers still run).
fn finishes_deletion(current: &Value, next: &Value) -> bool {
    let marked = next.pointer("/metadata/deletionTimestamp").is_some();
    let grace_over = current
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_none_or(|g| g == 0);
    marked && grace_over && has_finalizers(current) && !has_finalizers(next)
}

/// The claims an object gives back when it is deleted.
fn release_all(r: &Resource, object: &Value) -> Claims {
    if r.plural == "services" {
        services::diff(Some(object), None)
    } else {
        Claims::default()
    }
}

pub fn namespaces() -> &'static Resource {
    super::resources::find("", "v1", "namespaces").expect("namespaces are served")
}

fn field_validation(q: &Query) -> ApiResult<FieldValidation> {
    FieldValidation::from_query(q.get("fieldValidation").map(String::as_str))
}

fn pods() -> &'static Resource {
    super::resources::find("", "v1", "pods").expect("pods are served")
}

/// How long a pod being deleted has to stop, or None to delete it now: a
/// pod no node runs, one that has finished, or a grace of 0 (`kubectl
/// delete --grace-period=0 --force`). The grace comes from the request
/// (query or DeleteOptions), else the pod's
/// terminationGracePeriodSeconds, else 30 s.
fn pod_grace_period(pod: &Value, opts: &Value, q: &Query) -> ApiResult<Option<i64>> {
    let requested = match q.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        ),
        None => opts["gracePeriodSeconds"].as_i64(),
    };
    let bound = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if grace < 0 {
        return Err(ApiError::bad_request(
            "gracePeriodSeconds must not be negative",
        ));
    }
    Ok((bound && !finished && grace > 0).then_some(grace))
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

pub fn parse_rv_param(q: &Query) -> ApiResult<i64> {
    parse_rv(q.get("resourceVersion"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(finalizers: &[&str], marked: bool, grace: Option<i64>) -> Value {
        let mut o = json!({"metadata": {"name": "x", "finalizers": finalizers}});
        if marked {
            o["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        }
        if let Some(g) = grace {
            o["metadata"]["deletionGracePeriodSeconds"] = json!(g);
        }
        o
    }

    #[test]
    fn a_write_to_a_pod_in_its_grace_period_does_not_delete_it() {
        // A node's status for a pod it is stopping: no finalizers before
        // or after, but the grace is the node's to end.
        let pod = object(&[], true, Some(30));
        assert!(!finishes_deletion(&pod, &pod));
        // Nor does any write to an object marked with no finalizers.
        let marked = object(&[], true, None);
        assert!(!finishes_deletion(&marked, &marked));
    }

    #[test]
    fn removing_the_last_finalizer_of_a_marked_object_deletes_it() {
        let held = object(&["foregroundDeletion"], true, None);
        let released = object(&[], true, None);
        assert!(finishes_deletion(&held, &released));
        // Not while another finalizer remains, nor when it was not marked.
        let two = object(&["a", "b"], true, None);
        assert!(!finishes_deletion(&two, &object(&["b"], true, None)));
        assert!(!finishes_deletion(
            &object(&["a"], false, None),
            &object(&[], false, None)
        ));
        // A pod's finalizer removed while its node still has grace: kept.
        let pod = object(&["x"], true, Some(30));
        assert!(!finishes_deletion(&pod, &object(&[], true, Some(30))));
        let done = object(&["x"], true, Some(0));
        assert!(finishes_deletion(&done, &object(&[], true, Some(0))));
    }
}
