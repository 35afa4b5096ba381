//! Discovery documents: `/version`, `/api`, `/apis`, and the resource list
//! of each group version, in the shapes kubectl reads.

use serde_json::{json, Value};

use super::resources::{group_versions, Resource, RESOURCES};
use super::{reviews, usage};
use crate::auth::rbac::bootstrap::ALL_VERBS;

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-skiff-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// `/`: every path this API serves at its top, as Kubernetes lists them.
pub fn root() -> Value {
    let mut paths: Vec<String> = [
        "/api",
        "/api/v1",
        "/apis",
        "/openapi/v3",
        "/version",
        "/debug/flags/v",
        "/skiff/v1/http-sd",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    for g in groups()["groups"].as_array().into_iter().flatten() {
        paths.push(format!("/apis/{}", g["name"].as_str().unwrap_or("")));
        for v in g["versions"].as_array().into_iter().flatten() {
            paths.push(format!(
                "/apis/{}",
                v["groupVersion"].as_str().unwrap_or("")
            ));
        }
    }
    paths.sort();
    json!({"paths": paths})
}

pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

/// Every group with its versions, the first version listed preferred (as
/// [`group_versions`] orders them), then the review groups, and
/// `metrics.k8s.io` last.
pub fn groups() -> Value {
    let mut by_group: Vec<(&str, Vec<&str>)> = Vec::new();
    let all = group_versions().into_iter().chain([
        (reviews::AUTHENTICATION, reviews::VERSION),
        (reviews::AUTHORIZATION, reviews::VERSION),
        (usage::GROUP, usage::VERSION),
    ]);
    for (g, v) in all.filter(|(g, _)| !g.is_empty()) {
        match by_group.iter_mut().find(|(name, _)| *name == g) {
            Some((_, versions)) => versions.push(v),
            None => by_group.push((g, vec![v])),
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "preferredVersion": versions[0], "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Resources `kubectl get all` shows.
fn in_all(r: &Resource) -> bool {
    matches!(
        r.plural,
        "pods"
            | "services"
            | "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "jobs"
            | "cronjobs"
            | "horizontalpodautoscalers"
    )
}

/// `None` if the group version is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == (usage::GROUP, usage::VERSION) {
        return Some(usage::resource_list());
    }
    if reviews::is_review_group(group) && version == reviews::VERSION {
        return Some(reviews::resource_list(group));
    }
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let verbs: Vec<&str> = if r.plural == "namespaces" {
            ALL_VERBS
                .iter()
                .copied()
                .filter(|v| *v != "deletecollection")
                .collect()
        } else {
            ALL_VERBS.to_vec()
        };
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if in_all(r) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (kind, verbs, gv): (&str, &[&str], Option<(&str, &str)>) = match *sub {
                "status" => (r.kind, &["get", "patch", "update"], None),
                "scale" => (
                    "Scale",
                    &["get", "patch", "update"],
                    Some(("autoscaling", "v1")),
                ),
                "binding" => ("Binding", &["create"], None),
                // kubectl drain evicts only when this entry names its group
                // and version; otherwise it deletes.
                "eviction" => ("Eviction", &["create"], Some(("policy", "v1"))),
                "log" => ("Pod", &["get"], None),
                "token" => (
                    "TokenRequest",
                    &["create"],
                    Some(("authentication.k8s.io", "v1")),
                ),
                "exec" => ("PodExecOptions", &["create", "get"], None),
                "attach" => ("PodAttachOptions", &["create", "get"], None),
                "portforward" => ("PodPortForwardOptions", &["create", "get"], None),
                _ => continue,
            };
            let mut e = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if let Some((g, v)) = gv {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}
