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
    Gt(String, i64),
    Lt(String, i64),
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

/// A token of a label selector, as Kubernetes' lexer cuts them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Equals,
    NotEquals,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

impl Token {
    /// The token read where a value belongs: `in` and `notin` are words
    /// there (as Kubernetes' lexer reads them in its values mode).
    fn as_value(&self) -> Option<&str> {
        match self {
            Token::Word(w) => Some(w),
            Token::In => Some("in"),
            Token::NotIn => Some("notin"),
            _ => None,
        }
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Word(w) => write!(f, "{w:?}"),
            Token::Not => f.write_str("'!'"),
            Token::Equals => f.write_str("'='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::In => f.write_str("'in'"),
            Token::NotIn => f.write_str("'notin'"),
            Token::Open => f.write_str("'('"),
            Token::Close => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::Greater => f.write_str("'>'"),
            Token::Less => f.write_str("'<'"),
        }
    }
}

/// Cut `s` into tokens: the symbols `! != = == ( ) , < >` and words
/// between them (`in` and `notin` are keywords); whitespace only
/// separates.
fn tokens(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let special = |c: char| "!=(),<>".contains(c);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let (token, width) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '!' if next == Some('=') => (Token::NotEquals, 2),
            '!' => (Token::Not, 1),
            '=' if next == Some('=') => (Token::Equals, 2),
            '=' => (Token::Equals, 1),
            '(' => (Token::Open, 1),
            ')' => (Token::Close, 1),
            ',' => (Token::Comma, 1),
            '>' => (Token::Greater, 1),
            '<' => (Token::Less, 1),
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !special(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Word(word),
                });
                continue;
            }
        };
        out.push(token);
        i += width;
    }
    out
}

type Tokens = std::iter::Peekable<std::vec::IntoIter<Token>>;

fn unexpected(found: Option<Token>, wanted: &str) -> String {
    match found {
        Some(t) => format!("unable to parse requirement: found {t}, expected: {wanted}"),
        None => format!("unable to parse requirement: found end of string, expected: {wanted}"),
    }
}

/// The value after `=`, `==` or `!=` (empty before a comma or the end).
fn exact_value(it: &mut Tokens) -> Result<String, String> {
    match it.peek() {
        None | Some(Token::Comma) => Ok(String::new()),
        Some(t) if t.as_value().is_some() => {
            let t = it.next().unwrap_or(Token::Comma);
            value(t.as_value().unwrap_or_default())
        }
        Some(_) => Err(unexpected(it.next(), "identifier")),
    }
}

/// The set after `in` or `notin`, read as Kubernetes reads it: `()` is
/// the empty value alone, and an empty place between commas (`(a,)`,
/// `(,a)`, `(a,,b)`) is the empty value too.
fn set_values(it: &mut Tokens) -> Result<Vec<String>, String> {
    match it.next() {
        Some(Token::Open) => {}
        other => return Err(unexpected(other, "'('")),
    }
    let mut values: Vec<String> = Vec::new();
    let add = |values: &mut Vec<String>, v: String| {
        if !values.contains(&v) {
            values.push(v);
        }
    };
    // Whether the last thing read was a value (else a '(' or ',').
    let mut after_value = false;
    loop {
        match it.next() {
            Some(Token::Close) => {
                if !after_value {
                    add(&mut values, String::new());
                }
                return Ok(values);
            }
            Some(Token::Comma) => {
                if !after_value {
                    add(&mut values, String::new());
                }
                after_value = false;
            }
            Some(t) if !after_value && t.as_value().is_some() => {
                add(&mut values, value(t.as_value().unwrap_or_default())?);
                after_value = true;
            }
            other => return Err(unexpected(other, "',', ')' or identifier")),
        }
    }
}

/// The integer after `>` or `<`.
fn number(it: &mut Tokens) -> Result<i64, String> {
    match it.next() {
        Some(t) if t.as_value().is_some() => {
            let v = t.as_value().unwrap_or_default();
            v.parse().map_err(|_| {
                format!("for 'Gt', 'Lt' operators, the value must be an integer, not {v:?}")
            })
        }
        other => Err(unexpected(other, "identifier")),
    }
}

/// One requirement: `!k`, `k`, `k=v`, `k==v`, `k!=v`, `k in (..)`,
/// `k notin (..)`, `k>n`, `k<n`.
fn requirement(it: &mut Tokens) -> Result<Req, String> {
    let k = match it.next() {
        Some(Token::Not) => {
            return match it.next() {
                Some(Token::Word(k)) => Ok(Req::NotExists(key(&k)?)),
                other => Err(unexpected(other, "identifier after '!'")),
            }
        }
        Some(Token::Word(k)) => key(&k)?,
        other => return Err(unexpected(other, "'!' or identifier")),
    };
    Ok(match it.peek() {
        None | Some(Token::Comma) => Req::Exists(k),
        Some(Token::Equals) => {
            it.next();
            Req::Eq(k, exact_value(it)?)
        }
        Some(Token::NotEquals) => {
            it.next();
            Req::NotEq(k, exact_value(it)?)
        }
        Some(Token::In) => {
            it.next();
            Req::In(k, set_values(it)?)
        }
        Some(Token::NotIn) => {
            it.next();
            Req::NotIn(k, set_values(it)?)
        }
        Some(Token::Greater) => {
            it.next();
            Req::Gt(k, number(it)?)
        }
        Some(Token::Less) => {
            it.next();
            Req::Lt(k, number(it)?)
        }
        Some(_) => {
            return Err(unexpected(
                it.next(),
                "'=', '!=', 'in', 'notin', '>', '<', ',' or end of string",
            ))
        }
    })
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_name(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 63
        && s.starts_with(ok)
        && s.ends_with(ok)
        && s.chars().all(|c| ok(c) || c == '-' || c == '_' || c == '.')
}

/// A DNS subdomain: dot-separated lowercase labels, at most 253 characters.
fn is_subdomain(s: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    s.len() <= 253 && s.split('.').all(label)
}

/// A label key: a name, optionally behind a DNS subdomain and `/`.
fn key(k: &str) -> Result<String, String> {
    let valid = match k.split_once('/') {
        Some((prefix, name)) => is_subdomain(prefix) && is_name(name),
        None => is_name(k),
    };
    if !valid {
        return Err(format!(
            "invalid label key {k:?}: name part must consist of alphanumeric characters, '-', '_' \
             or '.', and must start and end with an alphanumeric character (at most 63 \
             characters), with an optional DNS subdomain prefix and '/'"
        ));
    }
    Ok(k.to_string())
}

/// A label value: empty, or a name.
fn value(v: &str) -> Result<String, String> {
    if !v.is_empty() && !is_name(v) {
        return Err(format!(
            "invalid label value {v:?}: must be 63 characters or less and must be empty or \
             begin and end with an alphanumeric character with '-', '_', '.' or alphanumerics \
             between"
        ));
    }
    Ok(v.to_string())
}

impl LabelSelector {
    /// Kubernetes' selector syntax: `app=web,tier!=db,env in (a,b),
    /// x notin (c),y,!legacy,replicas>2`; the error says what was found
    /// where.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut it = tokens(s).into_iter().peekable();
        let mut reqs = Vec::new();
        while it.peek().is_some() {
            reqs.push(requirement(&mut it)?);
            match it.next() {
                None => break,
                Some(Token::Comma) if it.peek().is_some() => {}
                other => return Err(unexpected(other, "',' and a requirement, or end of string")),
            }
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
                    reqs.push(Req::Eq(key(k)?, value(v)?));
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
            for v in &values {
                value(v).map_err(|err| format!("matchExpressions[{i}].values: {err}"))?;
            }
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
            Req::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Req::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
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

    /// What Kubernetes' parser accepts and refuses (each of these was
    /// read wrongly before).
    #[test]
    fn label_selector_syntax_as_kubernetes() {
        let o = json!({"metadata": {"labels": {"x": "a", "empty": "", "n": "5", "w": "in"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("x in(a)"), "no space before the set");
        assert!(m("x in (b, a),x notin(c)"));
        assert!(m("empty="), "an empty value");
        assert!(m("empty in ()"), "() is the empty value");
        assert!(m("empty in (b,)") && m("x in (,a)") && m("empty in (b,,c)"));
        assert!(!m("x in ()"));
        assert!(
            m("w=in") && m("w in (notin, in)"),
            "keywords are values there"
        );
        assert!(m("n>4") && m("n<6") && !m("n>5") && !m("x>1"));
        assert!(m("empty=="));
        assert!(m("example.com/tier!=db"));
        for bad in [
            "!a=b",
            "a=b=c",
            "x in (a",
            "x in (a b)",
            "a,",
            ",a",
            "a b",
            "-a=b",
            "a=-b",
            "Example.com/a=b",
            "a=b c",
            "n>x",
            "in=foo",
        ] {
            let e = LabelSelector::parse(bad);
            assert!(e.is_err(), "{bad:?} was accepted: {e:?}");
        }
        let e = LabelSelector::parse("!a=b").unwrap_err();
        assert!(e.contains("found '='"), "{e}");
        let long = "v".repeat(64);
        assert!(LabelSelector::parse(&format!("a={long}")).is_err());
        assert!(LabelSelector::parse(&format!("{long}=a")).is_err());
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
            json!({"matchLabels": {"a": "b c"}}),
            json!({"matchLabels": {"a b": "c"}}),
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["-x"]}]}),
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
