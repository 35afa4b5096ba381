//! OpenAPI v3 documents, one per group version, built once from the
//! `k8s-openapi` schemas of the served types.
//!
//! kubectl reads them twice: `apply` and `create` look for the
//! `fieldValidation` parameter on each kind's PATCH operation and, finding
//! it, leave unknown-field checks to the server (see [`super::fields`]);
//! `explain` renders the schemas and their descriptions.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use k8s_openapi::schemars::gen::SchemaSettings;
use serde_json::{json, Map, Value};

use super::resources::{group_versions, Resource, RESOURCES};

/// Where schemas live inside a document.
const SCHEMAS: &str = "#/components/schemas/";

pub struct Documents {
    /// `/openapi/v3`: the group versions and where their documents are.
    index: Value,
    /// By path below `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
    by_path: BTreeMap<String, Document>,
    /// Every schema by name, with `$ref`s left in place, for field checks.
    schemas: Map<String, Value>,
}

pub struct Document {
    pub body: Vec<u8>,
    pub etag: String,
}

pub fn documents() -> &'static Documents {
    static DOCS: OnceLock<Documents> = OnceLock::new();
    DOCS.get_or_init(build)
}

impl Documents {
    pub fn index(&self) -> &Value {
        &self.index
    }

    pub fn get(&self, path: &str) -> Option<&Document> {
        self.by_path.get(path.trim_matches('/'))
    }

    /// A schema by name (`io.k8s.api.core.v1.Pod`).
    pub fn schema(&self, name: &str) -> Option<&Value> {
        self.schemas.get(name)
    }

    /// The schema a `$ref` (or an `allOf` of one) points at, else `schema`.
    pub fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let reference = schema.get("$ref").or_else(|| {
            schema
                .get("allOf")
                .and_then(|a| a.get(0))
                .and_then(|s| s.get("$ref"))
        });
        reference
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(SCHEMAS))
            .and_then(|name| self.schemas.get(name))
            .unwrap_or(schema)
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn build() -> Documents {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let roots: Vec<(&'static Resource, String)> = RESOURCES
        .iter()
        .map(|r| {
            (r.schema)(&mut generator);
            (r, (r.schema_name)())
        })
        .collect();
    let mut schemas: Map<String, Value> = generator
        .take_definitions()
        .into_iter()
        .map(|(name, s)| {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            wrap_refs(&mut v);
            (name, v)
        })
        .collect();
    for (r, name) in &roots {
        if let Some(Value::Object(s)) = schemas.get_mut(name) {
            s.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]),
            );
        }
    }
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"type": "object", "description": "A patch: JSON patch, merge patch or strategic merge patch."}),
    );

    let mut by_path = BTreeMap::new();
    let mut index = Map::new();
    for (group, version) in group_versions() {
        let kinds: Vec<&(&Resource, String)> = roots
            .iter()
            .filter(|(r, _)| r.group == group && r.version == version)
            .collect();
        let mut paths = Map::new();
        for (r, name) in &kinds {
            add_paths(&mut paths, r, name);
        }
        let mut used = Map::new();
        for (_, name) in &kinds {
            collect(&schemas, name, &mut used);
        }
        collect(
            &schemas,
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
            &mut used,
        );
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (Skiff)", "version": "v1.32.0"},
            "paths": paths,
            "components": {"schemas": used},
        });
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let etag = format!("{:016X}", fnv(&body));
        let path = gv_path(group, version);
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={etag}")}),
        );
        by_path.insert(path, Document { body, etag });
    }
    Documents {
        index: json!({"paths": index}),
        by_path,
        schemas,
    }
}

/// `{"$ref": x, "description": d}` as Kubernetes writes it: the reference
/// inside `allOf`, so that tools that ignore a `$ref`'s siblings keep the
/// description.
fn wrap_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if o.len() > 1 {
                if let Some(r) = o.remove("$ref") {
                    o.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            o.values_mut().for_each(wrap_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(wrap_refs),
        _ => {}
    }
}

/// Copy `name` and every schema it refers to into `out`.
fn collect(all: &Map<String, Value>, name: &str, out: &mut Map<String, Value>) {
    if out.contains_key(name) {
        return;
    }
    let Some(schema) = all.get(name) else { return };
    out.insert(name.to_string(), schema.clone());
    let mut refs = Vec::new();
    refs_in(schema, &mut refs);
    for r in refs {
        collect(all, &r, out);
    }
}

fn refs_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let Some(name) = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(SCHEMAS))
            {
                out.push(name.to_string());
            }
            o.values().for_each(|v| refs_in(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs_in(v, out)),
        _ => {}
    }
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, changes are checked but not stored. The only valid value is All."),
        query_param("fieldManager", "A name for the actor making the change."),
        query_param(
            "fieldValidation",
            "How unknown fields in the body are treated: Ignore (dropped), Warn (dropped, with a warning) or Strict (refused).",
        ),
    ]
}

fn operation(r: &Resource, action: &str, id: &str, schema: &str, body: Option<&[&str]>) -> Value {
    let reference = json!({"$ref": format!("{SCHEMAS}{schema}")});
    let mut op = json!({
        "operationId": id,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if let Some(types) = body {
        let target = if action == "patch" {
            json!({"$ref": format!("{SCHEMAS}io.k8s.apimachinery.pkg.apis.meta.v1.Patch")})
        } else {
            reference
        };
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": target.clone()})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
        op["parameters"] = Value::Array(write_params());
    }
    op
}

fn add_paths(paths: &mut Map<String, Value>, r: &Resource, schema: &str) {
    const PATCHES: [&str; 4] = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let base = format!("/{}", gv_path(r.group, r.version));
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let id = |verb: &str| format!("{verb}{}", r.kind);
    paths.insert(
        collection.clone(),
        json!({
            "get": operation(r, "list", &id("list"), schema, None),
            "post": operation(r, "post", &id("create"), schema, Some(&["application/json", "application/yaml"])),
            "delete": operation(r, "deletecollection", &id("deleteCollection"), schema, None),
        }),
    );
    let item = format!("{collection}/{{name}}");
    paths.insert(
        item.clone(),
        json!({
            "get": operation(r, "get", &id("read"), schema, None),
            "put": operation(r, "put", &id("replace"), schema, Some(&["application/json", "application/yaml"])),
            "patch": operation(r, "patch", &id("patch"), schema, Some(&PATCHES)),
            "delete": operation(r, "delete", &id("delete"), schema, None),
        }),
    );
    if r.has("status") {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": operation(r, "get", &id("readStatus"), schema, None),
                "put": operation(r, "put", &id("replaceStatus"), schema, Some(&["application/json"])),
                "patch": operation(r, "patch", &id("patchStatus"), schema, Some(&PATCHES)),
            }),
        );
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_its_kinds() {
        let docs = documents();
        for (g, v) in group_versions() {
            let path = gv_path(g, v);
            let doc: Value =
                serde_json::from_slice(&docs.get(&path).expect("document").body).expect("JSON");
            assert!(docs.index()["paths"][&path]["serverRelativeURL"]
                .as_str()
                .is_some_and(|u| u.starts_with(&format!("/openapi/v3/{path}?hash="))));
            for r in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
                let tagged = doc["components"]["schemas"]
                    .as_object()
                    .expect("schemas")
                    .values()
                    .any(|s| s["x-kubernetes-group-version-kind"][0]["kind"] == r.kind);
                assert!(tagged, "{} has a schema tagged with its kind", r.kind);
            }
        }
    }

    #[test]
    fn patch_operations_offer_field_validation() {
        let doc: Value =
            serde_json::from_slice(&documents().get("apis/apps/v1").expect("apps").body)
                .expect("JSON");
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(op["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
    }

    #[test]
    fn every_reference_resolves_within_its_document() {
        for (g, v) in group_versions() {
            let doc: Value =
                serde_json::from_slice(&documents().get(&gv_path(g, v)).expect("doc").body)
                    .expect("JSON");
            let mut refs = Vec::new();
            refs_in(&doc, &mut refs);
            for r in refs {
                assert!(
                    doc["components"]["schemas"].get(&r).is_some(),
                    "{r} is missing from {g}/{v}"
                );
            }
        }
    }
}
