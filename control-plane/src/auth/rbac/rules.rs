//! Whether a PolicyRule allows a request, and whether one set of rules
//! covers another (the escalation check), as Kubernetes' RBAC matches them.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::auth::attributes::{Attributes, On, ResourceRef};

const ALL: &str = "*";

fn list(v: &Option<Vec<String>>) -> &[String] {
    v.as_deref().unwrap_or(&[])
}

fn has(items: &[String], wanted: &str) -> bool {
    items.iter().any(|i| i == ALL || i == wanted)
}

/// `*`, `pods`, `pods/log`, or `*/log` against a request's resource.
fn resource_matches(rule: &[String], r: &ResourceRef) -> bool {
    let combined = r.combined();
    rule.iter().any(|item| {
        item == ALL
            || *item == combined
            || r.subresource
                .as_deref()
                .is_some_and(|sub| item.strip_prefix("*/") == Some(sub))
    })
}

/// A rule's non-resource URL: exact, `*`, or a prefix ending in `*`.
fn url_matches(rule: &[String], path: &str) -> bool {
    rule.iter().any(|item| {
        item == ALL
            || item == path
            || item
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether `rule` allows the request.
pub fn allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    if !has(&rule.verbs, &attrs.verb) {
        return false;
    }
    match &attrs.on {
        On::Path(path) => url_matches(list(&rule.non_resource_urls), path),
        On::Resource(r) => {
            has(list(&rule.api_groups), &r.group)
                && resource_matches(list(&rule.resources), r)
                && match list(&rule.resource_names) {
                    [] => true,
                    names => r.name.as_ref().is_some_and(|n| names.contains(n)),
                }
        }
    }
}

/// Whether `owner` holds everything `wanted` grants: each verb on each
/// resource (and name) or URL of it is allowed by some rule of `owner`.
pub fn covers(owner: &[PolicyRule], wanted: &PolicyRule) -> bool {
    uncovered(owner, wanted).is_none()
}

/// The first piece of `wanted` that `owner` does not hold, in words.
pub fn uncovered(owner: &[PolicyRule], wanted: &PolicyRule) -> Option<String> {
    let verbs = &wanted.verbs;
    let held = |f: &dyn Fn(&PolicyRule) -> bool| owner.iter().any(f);
    for verb in verbs {
        for url in list(&wanted.non_resource_urls) {
            let ok = held(&|o| {
                has(&o.verbs, verb)
                    && list(&o.non_resource_urls)
                        .iter()
                        .any(|u| u == ALL || u == url || url_covered(u, url))
            });
            if !ok {
                return Some(format!("{{NonResourceURLs:[{url}], Verbs:[{verb}]}}"));
            }
        }
        for group in list(&wanted.api_groups) {
            for resource in list(&wanted.resources) {
                let names = list(&wanted.resource_names);
                let ok = held(&|o| {
                    has(&o.verbs, verb)
                        && has(list(&o.api_groups), group)
                        && resource_covered(list(&o.resources), resource)
                        && match list(&o.resource_names) {
                            [] => true,
                            mine => !names.is_empty() && names.iter().all(|n| mine.contains(n)),
                        }
                });
                if !ok {
                    let names = if names.is_empty() {
                        String::new()
                    } else {
                        format!(", ResourceNames:[{}]", names.join(" "))
                    };
                    return Some(format!(
                        "{{APIGroups:[\"{group}\"], Resources:[\"{resource}\"]{names}, Verbs:[\"{verb}\"]}}"
                    ));
                }
            }
        }
    }
    None
}

fn url_covered(owner: &str, wanted: &str) -> bool {
    match owner.strip_suffix('*') {
        Some(prefix) => wanted.starts_with(prefix),
        None => false,
    }
}

fn resource_covered(owner: &[String], wanted: &str) -> bool {
    owner.iter().any(|o| {
        o == ALL
            || o == wanted
            || o.strip_prefix("*/")
                .is_some_and(|sub| wanted.split_once('/').is_some_and(|(_, s)| s == sub))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Identity;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let v = |s: &[&str]| Some(s.iter().map(|x| x.to_string()).collect());
        PolicyRule {
            api_groups: v(groups),
            resources: v(resources),
            verbs: verbs.iter().map(|x| x.to_string()).collect(),
            ..Default::default()
        }
    }

    fn ask(verb: &str, r: ResourceRef) -> Attributes {
        let who = Identity {
            user: "u".into(),
            groups: vec![],
        };
        Attributes::resource(&who, verb, r)
    }

    #[test]
    fn resources_and_subresources_match_as_in_kubernetes() {
        let pods = rule(&[""], &["pods"], &["get", "list"]);
        let get = |sub: Option<&str>| ask("get", ResourceRef::new("", "pods").subresource(sub));
        assert!(allows(&pods, &get(None)));
        assert!(
            !allows(&pods, &get(Some("log"))),
            "pods does not grant pods/log"
        );
        assert!(!allows(&pods, &ask("delete", ResourceRef::new("", "pods"))));
        assert!(!allows(
            &pods,
            &ask("get", ResourceRef::new("apps", "pods"))
        ));
        assert!(allows(
            &rule(&[""], &["*/log"], &["get"]),
            &get(Some("log"))
        ));
        assert!(allows(&rule(&["*"], &["*"], &["*"]), &get(Some("exec"))));
        let named = PolicyRule {
            resource_names: Some(vec!["a".into()]),
            ..pods.clone()
        };
        assert!(allows(
            &named,
            &ask("get", ResourceRef::new("", "pods").named(Some("a")))
        ));
        assert!(!allows(
            &named,
            &ask("get", ResourceRef::new("", "pods").named(Some("b")))
        ));
        assert!(!allows(&named, &ask("list", ResourceRef::new("", "pods"))));
    }

    #[test]
    fn urls_match_exactly_or_by_prefix() {
        let r = PolicyRule {
            non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        };
        let who = Identity {
            user: "u".into(),
            groups: vec![],
        };
        let get = |p: &str| Attributes::path(&who, "get", p);
        assert!(allows(&r, &get("/healthz")));
        assert!(allows(&r, &get("/apis/apps/v1")));
        assert!(!allows(&r, &get("/healthz/etcd")));
        assert!(!allows(&r, &get("/metrics")));
    }

    #[test]
    fn covering_is_per_verb_resource_and_name() {
        let owner = vec![rule(&[""], &["pods", "configmaps"], &["get", "list"])];
        assert!(covers(&owner, &rule(&[""], &["pods"], &["get"])));
        assert!(!covers(&owner, &rule(&[""], &["pods"], &["delete"])));
        assert!(!covers(&owner, &rule(&[""], &["secrets"], &["get"])));
        assert!(!covers(&owner, &rule(&["*"], &["pods"], &["get"])));
        let admin = vec![rule(&["*"], &["*"], &["*"])];
        assert!(covers(
            &admin,
            &rule(&["apps"], &["deployments/scale"], &["update"])
        ));
        let named_only = vec![PolicyRule {
            resource_names: Some(vec!["a".into()]),
            ..rule(&[""], &["pods"], &["get"])
        }];
        assert!(!covers(&named_only, &rule(&[""], &["pods"], &["get"])));
        assert_eq!(
            uncovered(&owner, &rule(&[""], &["secrets"], &["get"])).as_deref(),
            Some("{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}")
        );
    }
}
