//! Unknown fields in a body, found against the OpenAPI schema of its kind.
//!
//! As in Kubernetes, unknown fields are never stored. The `fieldValidation`
//! query parameter says what else happens: `Strict` refuses the request
//! (400), `Warn` (the default) answers with a `Warning` header per field,
//! `Ignore` drops them silently.

use serde_json::Value;

use super::openapi::Documents;
use super::resources::Resource;
use super::status::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn from_query(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Remove the fields of `object` that its kind does not have; refuse them
/// under `Strict`, report them under `Warn`.
pub fn check(
    docs: &Documents,
    r: &Resource,
    object: &mut Value,
    mode: FieldValidation,
) -> Result<(), ApiError> {
    let Some(schema) = docs.schema(&(r.schema_name)()) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    prune(docs, schema, object, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        FieldValidation::Ignore => Ok(()),
        FieldValidation::Warn => {
            listed.into_iter().for_each(super::warnings::add);
            Ok(())
        }
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            r.kind,
            r.version,
            r.kind,
            listed.join(", ")
        ))),
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn prune(docs: &Documents, schema: &Value, value: &mut Value, path: &str, out: &mut Vec<String>) {
    let schema = docs.resolve(schema);
    match value {
        Value::Object(fields) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if properties.is_none() && additional.is_none() {
                // A free-form object (or one this server has no schema for).
                return;
            }
            let names: Vec<String> = fields.keys().cloned().collect();
            for name in names {
                let child = properties.and_then(|p| p.get(&name)).or(additional);
                match child {
                    Some(s) => {
                        if let Some(v) = fields.get_mut(&name) {
                            prune(docs, s, v, &join(path, &name), out);
                        }
                    }
                    None => {
                        fields.remove(&name);
                        out.push(join(path, &name));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(docs, s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openapi::documents;
    use crate::api::resources::find;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2, "bogus": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Never", "colour": "red"}]}
                }
            }
        })
    }

    #[test]
    fn strict_names_every_unknown_field_and_known_ones_pass() {
        let r = find("apps", "v1", "deployments").expect("deployments");
        let err = check(documents(), r, &mut deployment(), FieldValidation::Strict)
            .expect_err("unknown fields");
        assert_eq!(err.code.as_u16(), 400);
        assert!(
            err.message.contains("unknown field \"spec.bogus\""),
            "{}",
            err.message
        );
        assert!(
            err.message
                .contains("unknown field \"spec.template.spec.containers[0].colour\""),
            "{}",
            err.message
        );
        let mut ok = deployment();
        ok["spec"].as_object_mut().expect("spec").remove("bogus");
        ok["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .expect("container")
            .remove("colour");
        let before = ok.clone();
        check(documents(), r, &mut ok, FieldValidation::Strict).expect("known fields only");
        assert_eq!(ok, before, "labels (a map) and every known field are kept");
    }

    #[test]
    fn ignore_drops_unknown_fields() {
        let r = find("apps", "v1", "deployments").expect("deployments");
        let mut d = deployment();
        check(documents(), r, &mut d, FieldValidation::Ignore).expect("ignored");
        assert!(d["spec"].get("bogus").is_none());
        assert!(d["spec"]["template"]["spec"]["containers"][0]
            .get("colour")
            .is_none());
        assert_eq!(d["spec"]["replicas"], 2);
    }
}
