//! Label selectors (equality- and set-based) and field selectors.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// `app=web,tier!=db,env in (a,b),!legacy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

/// Split on commas that are not inside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(values: &str) -> Result<Vec<String>, String> {
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesized set, got {values:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) {
        return Err(format!("invalid label key {k:?}"));
    }
    Ok(k.to_string())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for t in terms(s) {
            let req = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(key(k)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::NotEq(key(k)?, v.trim().to_string())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(key(k)?, v.trim().to_string())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(key(k)?, v.trim().to_string())
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(key(k)?, set(v)?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(key(k)?, set(v)?)
            } else {
                Req::Exists(key(t)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// A `metav1.LabelSelector` object (`matchLabels` and
    /// `matchExpressions`, ANDed); the error says which part is wrong.
    pub fn from_object(selector: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if !selector.is_object() {
            return Err("a label selector must be an object".into());
        }
        match &selector["matchLabels"] {
            Value::Null => {}
            Value::Object(labels) => {
                for (k, v) in labels {
                    let v = v
                        .as_str()
                        .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                    reqs.push(Req::Eq(key(k)?, v.to_string()));
                }
            }
            _ => return Err("matchLabels must be a map of strings".into()),
        }
        let expressions = match &selector["matchExpressions"] {
            Value::Null => &[][..],
            Value::Array(e) => e.as_slice(),
            _ => return Err("matchExpressions must be a list".into()),
        };
        for (i, e) in expressions.iter().enumerate() {
            let k = key(e["key"].as_str().unwrap_or(""))
                .map_err(|err| format!("matchExpressions[{i}].key: {err}"))?;
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("matchExpressions[{i}].values must be strings"))?;
            let op = e["operator"].as_str().unwrap_or("");
            let req = match op {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}].values: must be specified when `operator` is 'In' or 'NotIn'"
                    ))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!(
                        "matchExpressions[{i}].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                    ))
                }
                "In" => Req::In(k, values),
                "NotIn" => Req::NotIn(k, values),
                "Exists" => Req::Exists(k),
                "DoesNotExist" => Req::NotExists(k),
                other => {
                    return Err(format!(
                        "matchExpressions[{i}].operator: not a valid selector operator: {other:?}"
                    ))
                }
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v),
            Req::NotEq(k, v) => get(k) != Some(v),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// `metadata.name=x,spec.nodeName!=y`: equality on fields of the object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields a selector may name (as Kubernetes allows them).
const FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "spec.unschedulable",
];

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for t in terms(s) {
            let (field, eq, value) = if let Some((f, v)) = t.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector term {t:?}"));
            };
            let field = field.trim();
            if !FIELDS.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = match object.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"app": "web", "env": "prod"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("app=web"));
        assert!(m("app==web,env"));
        assert!(!m("app!=web"));
        assert!(m("env in (prod, staging)"));
        assert!(!m("env notin (prod)"));
        assert!(m("!legacy"));
        assert!(!m("legacy"));
        assert!(m(""));
        assert!(LabelSelector::parse("env in prod").is_err());
    }

    #[test]
    fn label_selector_objects() {
        let o = json!({"metadata": {"labels": {"app": "web", "env": "prod"}}});
        let m = |s: Value| LabelSelector::from_object(&s).unwrap().matches(&o);
        assert!(m(json!({})));
        assert!(m(json!({"matchLabels": {"app": "web"}})));
        assert!(!m(json!({"matchLabels": {"app": "web", "tier": "db"}})));
        assert!(m(json!({"matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "dev"]},
            {"key": "legacy", "operator": "DoesNotExist"}]})));
        assert!(!m(json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]})));
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchLabels": {"a": 1}}),
            json!([]),
        ] {
            assert!(LabelSelector::from_object(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}});
        let m = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=p,spec.nodeName=n1"));
        assert!(!m("metadata.namespace!=d"));
        assert!(m("status.phase!=Running"));
        assert!(FieldSelector::parse("spec.foo=1").is_err());
    }
}
